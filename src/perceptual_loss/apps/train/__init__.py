"""Training with the perceptual loss: ``perceptual train``'s loop, tasks and parts.

:mod:`.loop` (fit: progress, checkpoints, samples, report, DDP), :mod:`.restoration`
(denoising, super-resolution), :mod:`.style` (fast style transfer, Gatys optimisation),
:mod:`.loss_mix` (a spec such as ``"mse=1,perceptual=0.1"`` to a recipe), :mod:`.data`,
:mod:`.models`, :mod:`.checkpoints` and :mod:`.reports`. Import each name from its module.
"""
