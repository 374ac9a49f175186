"""One module per command: options in, library call, rendering out."""
