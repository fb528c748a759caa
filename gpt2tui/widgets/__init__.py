"""The console's widgets: slider, loss chart, metric tile, sampler panel, prompt line, transcript,
and the trials screen's tables."""
