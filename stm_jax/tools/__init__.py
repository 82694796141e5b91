"""The tools around a model: weight conversion, prediction, visualisation, export, summary."""
