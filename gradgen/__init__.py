"""gradgen: YAML specs of tensor computations in, vectorized NumPy gradient modules out."""

__version__ = "0.1.0"
