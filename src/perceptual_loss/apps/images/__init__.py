"""Images for the apps: files to tensors and back, grids, CT/MRI slices, quality, degradations.

Images are ``(C, H, W)`` float32 tensors in ``[0, 1]``. Import each name from its module
(:mod:`.io`, :mod:`.png16`, :mod:`.grids`, :mod:`.slices`, :mod:`.quality`,
:mod:`.degradations`).
"""
