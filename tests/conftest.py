import pytest
import torch

from sharenet.engine.fastpath import key_compile_cache_by_isa

key_compile_cache_by_isa()  # before any test compiles: an AVX2-limited run's kernels never meet a native one


def pytest_collection_modifyitems(config, items):
    """`cuda` tests run where torch sees a GPU and are reported skipped, with the reason, elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fmnist_dir(tmp_path_factory):
    """A real Fashion-MNIST subset: 2,560 training and 1,000 test images."""
    from .datasets import fashion_mnist_subset

    return fashion_mnist_subset(tmp_path_factory.mktemp("fmnist"), 2560, 1000)


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory):
    from .datasets import cifar_pickles

    return cifar_pickles(tmp_path_factory.mktemp("cifar10"), "cifar10")


@pytest.fixture(scope="session")
def imagenet_dir(tmp_path_factory):
    from .datasets import imagenet_folders

    return imagenet_folders(tmp_path_factory.mktemp("imagenet"))
