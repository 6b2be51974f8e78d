"""One module per data set; the module name is the data set's name (`fashion_mnist` is `fashion-mnist`).

Each module has `load(root: str | None) -> distill.data.Raw`.
"""
