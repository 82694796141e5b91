"""What an evaluation writes: predictions.csv read back."""


import numpy as np

from stm_jax.evaluation import reports


def test_predictions_round_trip(tmp_path):
  scores = np.array([[0.25, 0.75], [0.5, 0.5]])
  path = str(tmp_path / 'p.csv')
  reports.write_predictions(path, ['a', 'b'], scores, np.array([1, -1]))
  ids, got, labels = reports.read_predictions(path)
  assert ids == ['a', 'b'] and labels.tolist() == [1, -1]
  np.testing.assert_allclose(got, scores)
