"""EAS on CIFAR-10 through tensorflow-datasets, for accelerator hosts.

Plain CNN (``default``, ``paper_budget``) and DenseNet (``densenet``) spaces.
``default``: the start network trained for 40 epochs with standard augmentation; every
child trained for 5 epochs from its inherited weights; an episode samples 10 children of
four Net2Deeper steps and one Net2Wider step; the children of an episode are spread over
all local devices. ``paper_budget``: the plain-CNN search with the EAS paper's budget and
training (§4.1: each child trained for 20 epochs by SGD with Nesterov momentum 0.9, weight
decay 1e-4, batch 64 and a cosine schedule from 0.02; 5,000 training images held out to
validate; 450 sampled networks); the strategy's own settings of the paper come with
``--preset paper``. Needs the data in a TFDS folder (``--data-dir``) or ``download`` with
TensorFlow.
"""

_TRAIN = {"batch_size": 128, "learning_rate": 0.02, "augment": True, "dtype": "bfloat16"}
# The paper's training of a sampled network.
_PAPER_TRAIN = {"batch_size": 64, "learning_rate": 0.02, "optimizer": "sgd", "momentum": 0.9,
                "nesterov": True, "weight_decay": 1e-4, "schedule": "cosine",
                "augment": True, "dtype": "bfloat16"}
_PLAIN = {"family": "plain_cnn", "start": {"variant": "small"}, "num_children": 10,
          "steps": ["deeper", "deeper", "deeper", "deeper", "wider"]}

VARIANTS = {
    "default": {
        "dataset": "cifar10", "data_limit": None, "val_fraction": 0.1,
        "pretrain": {**_TRAIN, "epochs": 40.0, "learning_rate": 0.05},
        "train": {**_TRAIN, "epochs": 5.0},
        "eas": _PLAIN,
        "max_evals": 301, "devices": "all",
        "arms": ["eas", "random"], "seeds": [0, 1],
    },
    "paper_budget": {
        "dataset": "cifar10", "data_limit": None, "val_fraction": 0.1,
        "pretrain": {**_TRAIN, "epochs": 40.0, "learning_rate": 0.05},
        "train": {**_PAPER_TRAIN, "epochs": 20.0},
        "eas": _PLAIN,
        "max_evals": 451, "devices": "all",
        "arms": ["eas", "random"], "seeds": [0],
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
