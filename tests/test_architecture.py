"""The import graph of the project: dependencies run one way, no cycles, no hidden imports.

Read from the source with `ast` (nothing is imported). The layers, from the bottom:

  input_pipeline (read side)  <-  input_pipeline.prepare (write side)
  stm_jax.models  <-  stm_jax.core  <-  stm_jax.evaluation  <-  stm_jax.train, stm_jax.tools
  <-  stm_jax.demo  <-  launch

An import may go down or sideways inside its own package, never up; `input_pipeline` imports
nothing of `stm_jax`, the read side nothing of `prepare`; project code is imported at module level
only (heavy optional third-party packages such as torch may still be imported lazily).
"""

import ast
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ('stm_jax', 'input_pipeline', 'configs', 'benchmarks')
# Lower rank = lower layer. A module may import modules of a lower or equal rank only; equal
# rank only inside the same package.
RANKS = (
    ('input_pipeline.prepare', 1),
    ('input_pipeline', 0),
    ('configs', 0),
    ('stm_jax.models', 2),
    ('stm_jax.core', 3),
    ('stm_jax.evaluation', 4),
    ('stm_jax.train', 5),
    ('stm_jax.tools', 5),
    ('stm_jax.demo', 6),
    ('launch', 7),
    ('benchmarks', 7),  # Measurements: may import any layer.
    ('stm_jax', 0),  # The package itself (its __init__ imports nothing).

)


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix('').parts)
  if parts[-1] == '__init__':
    parts = parts[:-1]
  return '.'.join(parts)


def _sources() -> dict[str, pathlib.Path]:
  found = {'launch': ROOT / 'launch.py'}
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob('*.py')):
      found[_module_name(path)] = path
  return found


def _group(module: str) -> tuple[str, int]:
  for prefix, rank in RANKS:
    if module == prefix or module.startswith(prefix + '.'):
      return prefix, rank
  raise AssertionError(f'{module}: in no layer of RANKS')


def _imports(path: pathlib.Path, modules: set[str]):
  """Yields (imported project module, line, at module level) for every import in `path`."""
  tree = ast.parse(path.read_text(), str(path))
  top_level = {id(node) for node in tree.body}
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [f'{node.module}.{a.name}' for a in node.names] + [node.module]
    for name in names:
      # The longest prefix that is a project module (`from a import b` may import module a.b).
      while name and name not in modules:
        name = name.rpartition('.')[0]
      if name:
        yield name, node.lineno, id(node) in top_level


def _graph():
  sources = _sources()
  modules = set(sources)
  edges, hidden = {}, []
  for module, path in sources.items():
    edges[module] = set()
    for target, line, top in _imports(path, modules):
      if target == module or module.startswith(target + '.') and target in modules and (
          sources[target].name == '__init__.py'):
        continue  # A package importing itself / a submodule naming its package.
      if not top:
        hidden.append(f'{path.relative_to(ROOT)}:{line} imports {target} inside a function')
      edges[module].add(target)
  return sources, edges, hidden


def test_no_function_level_import_of_project_code():
  _, _, hidden = _graph()
  assert not hidden, '\n'.join(hidden)


def test_imports_run_down_the_layers():
  _, edges, _ = _graph()
  wrong = []
  for module, targets in edges.items():
    group, rank = _group(module)
    for target in targets:
      target_group, target_rank = _group(target)
      if target_rank > rank or (target_rank == rank and target_group != group):
        wrong.append(f'{module} ({group}) imports {target} ({target_group})')
  assert not wrong, '\n'.join(sorted(wrong))


def test_input_pipeline_imports_nothing_of_stm_jax_and_reads_without_prepare():
  _, edges, _ = _graph()
  for module, targets in edges.items():
    if module.startswith('input_pipeline'):
      assert not [t for t in targets if t.startswith('stm_jax')], module
    if module.startswith('input_pipeline') and not module.startswith('input_pipeline.prepare'):
      assert not [t for t in targets if t.startswith('input_pipeline.prepare')], module


def test_no_import_cycle():
  _, edges, _ = _graph()
  state = {}

  def visit(module, stack):
    state[module] = 'open'
    for target in sorted(edges.get(module, ())):
      if state.get(target) == 'open':
        cycle = stack[stack.index(target):] + [target]
        raise AssertionError('import cycle: ' + ' -> '.join(cycle))
      if target not in state:
        visit(target, stack + [target])
    state[module] = 'done'

  for module in sorted(edges):
    if module not in state:
      visit(module, [module])


def test_the_checker_sees_a_violation(tmp_path):
  """The rules above are not vacuous: a planted upward and hidden import is caught."""
  path = tmp_path / 'bad.py'
  path.write_text('from stm_jax.train import loop\n\ndef f():\n  from stm_jax.core import sharding\n')
  found = list(_imports(path, {'stm_jax.train.loop', 'stm_jax.core.sharding'}))
  assert ('stm_jax.train.loop', 1, True) in found
  assert ('stm_jax.core.sharding', 4, False) in found


# Documents a clone does not have: the design reference and the folder beside the repository.
# Spelled in pieces so that this file does not name them itself.
_OUTSIDE = ('DESIGN' + '.md', '..' + '/shared')


def test_no_file_names_a_document_outside_the_repository():
  offenders = []
  for dirpath, dirnames, filenames in os.walk(ROOT):
    dirnames[:] = [d for d in dirnames if not d.startswith('.')]
    for name in filenames:
      if name.endswith(('.py', '.md', '.txt', '.ini')):
        text = (pathlib.Path(dirpath) / name).read_text(errors='replace')
        if any(document in text for document in _OUTSIDE):
          offenders.append(os.path.join(dirpath, name))
  assert not offenders, offenders
