"""The built-in implementation of each plugin kind, one module per kind."""
