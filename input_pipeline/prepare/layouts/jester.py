"""Jester v1: JPEG frame folders and 20BN csv annotations (27 classes).

raw_dir holds `20bn-jester-v1/<id>/00001.jpg ...` and `jester-v1-labels.csv`, `jester-v1-train.csv`,
`jester-v1-validation.csv`, `jester-v1-test.csv` (in any subfolder). Frames were extracted at
12 fps.
"""

from input_pipeline.prepare.layouts import common
from input_pipeline.prepare.layouts import twentybn


def read(raw_dir: str, config=None) -> common.Layout:
  """Finds the annotations and frame folders in `raw_dir`; returns the Layout (see common)."""
  del config
  return twentybn.read(raw_dir, dataset='jester', prefix='jester-v1', root_name='20bn-jester-v1',
                       fps=12.0)
