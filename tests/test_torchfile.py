"""The restricted torch.save reader, on files written by tests/torchfiles.py."""
import collections
import os
import pickle

import numpy as np
import pytest

import torchfiles
from nst import torchfile
from nst.errors import UserError


@pytest.mark.parametrize('writer', [torchfiles.save_legacy,
                                    torchfiles.save_zip])
def test_torch_file_round_trip(tmp_path, writer):
  state = torchfiles.sample_state(np.random.default_rng(0))
  writer(tmp_path / 'state', state)
  got = torchfile.read_torch_file(tmp_path / 'state')
  assert list(got) == list(state)
  for k in state:
    assert got[k].dtype == state[k].dtype
    np.testing.assert_array_equal(got[k], state[k])


def test_malicious_global_is_refused_and_not_run(tmp_path):
  marker = tmp_path / 'pwned'

  class Evil:
    def __reduce__(self):
      return os.system, (f'touch {marker}',)

  payload = pickle.dumps({'conv': Evil()}, protocol=2)
  torchfiles.save_legacy(tmp_path / 'evil.bin', {}, payload=payload)
  with pytest.raises(UserError, match=r'refused global (posix|os)\.system'):
    torchfile.read_torch_file(tmp_path / 'evil.bin')
  assert not marker.exists()


def test_zip_with_disallowed_global_is_refused(tmp_path):
  import zipfile
  payload = pickle.dumps(collections.OrderedDict(x=print), protocol=2)
  with zipfile.ZipFile(tmp_path / 'evil.pth', 'w') as z:
    z.writestr('archive/data.pkl', payload)
  with pytest.raises(UserError, match=r'refused global (builtins|__builtin__)\.print'):
    torchfile.read_torch_file(tmp_path / 'evil.pth')


def test_truncated_storage_is_an_error(tmp_path):
  torchfiles.save_legacy(tmp_path / 's.bin',
                         torchfiles.sample_state(np.random.default_rng(0)))
  data = (tmp_path / 's.bin').read_bytes()
  (tmp_path / 's.bin').write_bytes(data[:-7])
  with pytest.raises(UserError, match='truncated'):
    torchfile.read_torch_file(tmp_path / 's.bin')
