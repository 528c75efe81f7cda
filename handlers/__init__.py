"""Built-in handlers, written against `extproc`'s public hook API like any user handler."""
