"""EAS on SVHN (``svhn_cropped`` through tensorflow-datasets), for accelerator hosts.

The plain-CNN search of ``eas_cifar10.py`` with SVHN's shorter schedules (the training
split is larger and easier); no flips or crops, which do not suit digits.
"""

_TRAIN = {"batch_size": 128, "learning_rate": 0.02, "augment": False, "dtype": "bfloat16"}

VARIANTS = {
    "default": {
        "dataset": "svhn_cropped", "data_limit": None, "val_fraction": 0.05,
        "pretrain": {**_TRAIN, "epochs": 15.0, "learning_rate": 0.05},
        "train": {**_TRAIN, "epochs": 2.0},
        "eas": {"family": "plain_cnn", "start": {"variant": "small"}, "num_children": 10,
                "steps": ["deeper", "deeper", "deeper", "deeper", "wider"]},
        "max_evals": 201, "devices": "all",
        "arms": ["eas", "random"], "seeds": [0],
    },
}
