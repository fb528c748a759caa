"""Reusable widgets of the console: slider, loss chart, metric tile."""
