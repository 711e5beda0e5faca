"""Figures, widgets and JS-playable animations for the book (matplotlib, ipywidgets).

Import the submodules directly, e.g. ``from metabook.viz.adaptation import ...``;
matplotlib and ipywidgets are only needed when you do.
"""
