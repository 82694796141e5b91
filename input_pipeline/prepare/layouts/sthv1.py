"""Something-Something v1: JPEG frame folders and 20BN csv annotations (174 classes).

raw_dir holds `20bn-something-something-v1/<id>/00001.jpg ...` and
`something-something-v1-labels.csv`, `-train.csv`, `-validation.csv`, `-test.csv` (in any
subfolder). Frames were extracted at 12 fps.
"""

from input_pipeline.prepare.layouts import common
from input_pipeline.prepare.layouts import twentybn


def read(raw_dir: str, config=None) -> common.Layout:
  """Finds the annotations and frame folders in `raw_dir`; returns the Layout (see common)."""
  del config
  return twentybn.read(raw_dir, dataset='sthv1', prefix='something-something-v1',
                       root_name='20bn-something-something-v1', fps=12.0)
