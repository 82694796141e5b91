"""Figures written as PNG files without a display: the one matplotlib set-up of the project."""

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from input_pipeline import files


def new_figure(figsize: tuple[float, float], **kwargs) -> Figure:
  """A figure drawn by the Agg backend (no GUI, no global pyplot state)."""
  figure = Figure(figsize=figsize, **kwargs)
  FigureCanvasAgg(figure)
  return figure


def save_png(figure: Figure, path: str, dpi: int = 100) -> None:
  """Writes `figure` to `path` as a PNG, atomically."""
  with files.atomic_write(path, 'wb') as f:
    figure.savefig(f, format='png', dpi=dpi)
