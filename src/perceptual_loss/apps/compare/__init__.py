"""``perceptual compare``: two images, two folders or two clips, scored and reported.

:mod:`.scorer` (the metrics of a pair), :mod:`.folders` (folders matched by name, sharded
under ``torchrun``), :mod:`.video` (clips and tLP), :mod:`.results` (a pair's scores, means,
JSON and CSV), :mod:`.page` (the HTML page), :mod:`.heatmap` (where a pair differs) and
:mod:`.plot` (the per-frame plot). Import each name from its module.
"""
