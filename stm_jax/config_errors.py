"""The one way a bad config value is reported: an error naming the field, its value and the rule."""


def fail(field: str, value, why: str):
  """Raises a ValueError `config.<field>=<value>: <why>`, before any work starts."""
  raise ValueError(f'config.{field}={value!r}: {why}')
