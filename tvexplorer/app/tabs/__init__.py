"""The app's tabs, one module each with its `build_*` function, layout and handlers: a new chart or control
touches one of them. Shared pieces (named bundles of components, the path from an error to a warning) are
in common.py."""
