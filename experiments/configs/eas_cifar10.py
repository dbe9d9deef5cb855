"""EAS on CIFAR-10 through tensorflow-datasets, for accelerator hosts.

Plain CNN (``default``) and DenseNet (``densenet``) spaces. The start networks are
trained for 40 epochs with standard augmentation; every child is trained for 5 epochs
from its inherited weights; an episode samples 10 children of four Net2Deeper steps and
one Net2Wider step; the children of an episode are spread over all local devices.
Needs the data in a TFDS folder (``--data-dir``) or ``download`` with TensorFlow.
"""

_TRAIN = {"batch_size": 128, "learning_rate": 0.02, "augment": True, "dtype": "bfloat16"}

VARIANTS = {
    "default": {
        "dataset": "cifar10", "data_limit": None, "val_fraction": 0.1,
        "pretrain": {**_TRAIN, "epochs": 40.0, "learning_rate": 0.05},
        "train": {**_TRAIN, "epochs": 5.0},
        "eas": {"family": "plain_cnn", "start": {"variant": "small"}, "num_children": 10,
                "steps": ["deeper", "deeper", "deeper", "deeper", "wider"]},
        "max_evals": 301, "devices": "all",
        "arms": ["eas", "random"], "seeds": [0, 1],
    },
    "densenet": {
        "dataset": "cifar10", "data_limit": None, "val_fraction": 0.1,
        "pretrain": {**_TRAIN, "epochs": 40.0, "learning_rate": 0.05},
        "train": {**_TRAIN, "epochs": 5.0},
        "eas": {"family": "densenet",
                "start": {"growth_rate": 12, "block_layers": [4, 4, 4], "init_features": 24,
                          "bottleneck": True, "compression": 0.5},
                "num_children": 10, "steps": ["deeper", "deeper", "wider"],
                "max_len": 96},
        "max_evals": 201, "devices": "all",
        "arms": ["eas", "random"], "seeds": [0],
    },
}
