"""The framework-free core: preprocessing, the model and its engines, batching, decode memory, versions, metrics."""
