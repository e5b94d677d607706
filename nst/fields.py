"""The config's fields as a user reads them: their defaults and meanings.

configs/default.py is the one source. Its comments are the documentation:
``# --- Name: note`` starts a group, a comment at the end of a
``c.field = value`` line (and the deeper-indented comment lines under it)
is that field's meaning, and comment lines just above a field belong to it
too. ``documented`` reads them; ``help_text`` is ``--help``'s listing;
``differences`` names the fields a config sets otherwise.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import io
import os
import textwrap
import tokenize
from pathlib import Path
from typing import Any

HERE = 'configs/default.py'


def default_path() -> str:
  """configs/default.py of the working directory, or else the one of the
  repository this package is in (an editable install run from elsewhere)."""
  beside = Path(__file__).resolve().parents[1] / HERE
  return (HERE if os.path.lexists(HERE) or not beside.is_file() else
          str(beside))


@dataclasses.dataclass
class Field:
  name: str
  doc: str          # the comments that document it, joined


@dataclasses.dataclass
class Group:
  name: str
  note: str         # what the group's header line says after its name
  fields: list[Field]


def documented(source: str) -> list[Group]:
  """The groups and fields of a config file's text (see the module's
  docstring for how comments attach); fields before any group header go in
  a group named 'Fields'."""
  groups: list[Group] = []
  comments: dict[int, tuple[int, str]] = {}   # line -> (column, text)
  assigned: dict[int, str] = {}               # line -> field name
  tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
  for k, tok in enumerate(tokens):
    if tok.type == tokenize.COMMENT:
      comments[tok.start[0]] = (tok.start[1], tok.string[1:].strip())
    elif (tok.type == tokenize.NAME and tok.string == 'c'
          and k + 3 < len(tokens) and tokens[k + 1].string == '.'
          and tokens[k + 3].string == '='
          and (k == 0 or tokens[k - 1].type in (tokenize.INDENT,
                                                tokenize.NEWLINE,
                                                tokenize.NL,
                                                tokenize.DEDENT))):
      assigned[tok.start[0]] = tokens[k + 2].string
  preface: list[str] = []
  last: Field | None = None
  for number, line in enumerate(source.splitlines(), start=1):
    column, text = comments.get(number, (0, ''))
    code = line[:column].strip() if number in comments else line.strip()
    if number in assigned:
      last = Field(assigned[number], ' '.join(preface + [text]).strip())
      if not groups:
        groups.append(Group('Fields', '', []))
      groups[-1].fields.append(last)
      preface = []
    elif number in comments and not code:
      if text.startswith('---'):
        name, _, note = text.strip('- ').partition(':')
        groups.append(Group(name.strip().rstrip('.'), note.strip(), []))
        preface, last = [], None
      elif last is not None and column > 2:  # under the field's own comment
        last.doc = f'{last.doc} {text}'.strip()
      else:                                  # above the next field
        preface.append(text)
        last = None
    else:  # a blank line or other code ends what came before
      preface, last = [], None
  return groups


def read(path: str | None = None) -> list[Group]:
  """``documented`` of configs/default.py (or ``path``)."""
  return documented(Path(path or default_path()).read_text())


def load(path: str | None = None):
  """The ConfigDict of configs/default.py (or ``path``)."""
  spec = importlib.util.spec_from_file_location('_nst_config',
                                                path or default_path())
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def show(value: Any) -> str:
  """A value as it is typed after ``--config.field=``."""
  if isinstance(value, list):
    value = tuple(value)
  return repr(value)


def differences(config, default) -> list[tuple[str, Any, Any]]:
  """(field, value, default) for each top-level field of ``config`` whose
  value is not the default's (a field the default lacks: default None),
  in ``config``'s order; the sweep section is left out."""
  out = []
  for name in config.keys():
    if name == 'sweep':
      continue
    value = config[name]
    base = default[name] if name in default else None
    if _plain(value) != _plain(base):
      out.append((name, value, base))
  return out


def _plain(value):
  if isinstance(value, (list, tuple)):
    return tuple(_plain(v) for v in value)
  if hasattr(value, 'to_dict'):
    return value.to_dict()
  return value


def help_text(config=None, width: int = 79) -> str:
  """Every config field, grouped as configs/default.py groups them, each
  with its value in ``config`` (default: the default's) and its meaning."""
  default = load()
  config = default if config is None else config
  out = ['config fields (set any with --config.FIELD=VALUE; documented in '
         f'{HERE}):']
  seen = set()
  wrap = lambda s, indent: textwrap.fill(
      s, width, initial_indent=indent, subsequent_indent=indent)
  for group in read():
    out.append('')
    out.append(wrap(f'{group.name}' + (f': {group.note}' if group.note
                                       else ''), ''))
    for f in group.fields:
      seen.add(f.name)
      value = config[f.name] if f.name in config else default[f.name]
      out.append(f'  {f.name} = {show(value)}')
      if f.doc:
        out.append(wrap(f.doc, '      '))
  others = [k for k in config.keys() if k not in seen]
  if others:
    out.append('')
    out.append('Other fields of this config file:')
    for name in others:
      value = config[name]
      out.append(f'  {name} = ' + (
          '(a section: see nst/sweep.py and configs/sweeps/)'
          if hasattr(value, 'to_dict') else show(value)))
  return '\n'.join(out) + '\n'
