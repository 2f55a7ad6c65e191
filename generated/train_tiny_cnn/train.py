"""Train tiny_cnn: ``python train.py --data data/train.npz`` (see README.md)."""

from tiny_cnn.train import main

if __name__ == "__main__":
    raise SystemExit(main())
