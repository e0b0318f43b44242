"""The trainer that runs on the nodes under torchrun: `python -m spottrain train --recipe recipes/NAME.yaml`."""
