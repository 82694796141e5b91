"""The write side of the data: official downloads converted into prepared datasets."""
