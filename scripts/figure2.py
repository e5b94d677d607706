"""Figure 2 of Gatys, Ecker & Bethge (2015), laid out like the paper.

  python scripts/figure2.py [--images data/paper] [--workdir runs/fig2]
      [--overwrite] [--config.FIELD=VALUE ...]

Runs configs/sweeps/fig2.py on the images in --images (fetched by
scripts/fetch_paper_images.py) and writes figure2.png into --workdir, beside
the sweep's members, results.csv, contact sheet and index.html. Any config
field can be overridden, e.g. --config.image_size=256
--config.optimizer=adam --config.num_steps=500 for a CPU.
Paintings whose files are missing leave their panel empty, and are named.
"""
from pathlib import Path

from nst import figures

if __name__ == '__main__':
  figures.main(2, Path(__file__).parents[1] / 'configs/sweeps/fig2.py')
