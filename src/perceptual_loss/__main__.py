"""``python -m perceptual_loss``: the same as the ``perceptual`` command."""

from perceptual_loss.cli import main

if __name__ == "__main__":
    main()
