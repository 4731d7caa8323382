"""Applications built on the perceptual loss: what users run with it.

Rooms (imported on demand, so that ``import perceptual_loss`` stays light); each module
exports what it defines, and callers import a name from the module where it lives:

- :mod:`perceptual_loss.apps.images`: reading and writing images (``io``, ``png16``),
  picture grids (``grids``), CT/MRI slices (``slices``), PSNR/SSIM (``quality``), and what
  makes a picture worse (``degradations``: noise, bicubic downscale, blur, shift).
- :mod:`perceptual_loss.apps.train`: the training loop (``loop``), its tasks
  (``restoration``, ``style``), the loss mix (``loss_mix``), data (``data``), networks
  (``models``), checkpoints and reports.
- :mod:`perceptual_loss.apps.compare`: scoring pairs (``scorer``), folders and clips
  (``folders``, ``video``), results files (``results``), and the HTML page (``page``,
  ``heatmap``, ``plot``).
- :mod:`perceptual_loss.apps.runtime`: distributed set-up, progress bars, CPU threads.
- :mod:`perceptual_loss.apps.features`: feature maps as pictures.
- :mod:`perceptual_loss.apps.demo`: the ``perceptual demo`` walkthrough.

These need the ``cli`` extra (``pip install "perceptual-loss[cli]"``) for progress bars,
plots and sample images.
"""
