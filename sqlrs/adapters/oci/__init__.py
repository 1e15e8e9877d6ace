"""OCI registries as a remote state cache: the registry client (oras-py) and the layer format."""
