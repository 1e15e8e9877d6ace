"""One module or package per technology, each implementing a port."""
