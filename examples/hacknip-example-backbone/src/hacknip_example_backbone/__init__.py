"""A template hacknip backbone plugin (see README.md)."""
