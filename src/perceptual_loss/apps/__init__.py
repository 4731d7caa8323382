"""Applications built on the perceptual loss: what users train with it.

Submodules (imported on demand, so that ``import perceptual_loss`` stays light):

- :mod:`perceptual_loss.apps.models`: U-Net, Johnson et al. transformer network,
  pixel-shuffle super-resolution network.
- :mod:`perceptual_loss.apps.data`: image folders, scikit-image samples, random crops,
  degradations (Gaussian/Poisson noise, bicubic downscale), 16-bit CT/MRI windowing.
- :mod:`perceptual_loss.apps.training`: the training loop (loss mix, progress, checkpoints
  with resume, sample grids, loss curve, held-out report, DDP via ``torchrun``).
- :mod:`perceptual_loss.apps.style`: fast style transfer training and Gatys optimisation.
- :mod:`perceptual_loss.apps.demo`: the ``perceptual demo`` walkthrough.

These need the ``cli`` extra (``pip install "perceptual-loss[cli]"``) for progress bars,
plots and sample images.
"""
