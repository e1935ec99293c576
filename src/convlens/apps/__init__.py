"""The applications: the lecture tour, the atlas and the command line, over one HTML writer.

The top of the import graph: may import every other wing; nothing imports it.
"""
