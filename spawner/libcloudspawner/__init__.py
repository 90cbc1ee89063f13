"""jupyter-libcloudspawner: a JupyterHub spawner giving every user server its own cloud VM (Apache Libcloud)."""

__version__ = "2.0.0.dev0"

__all__ = ["LibcloudSpawner"]


def __getattr__(name):
    # lazy, so that the pure helper modules (naming, options, userdata, ...) import without JupyterHub
    if name == "LibcloudSpawner":
        from .spawner import LibcloudSpawner

        return LibcloudSpawner
    raise AttributeError(name)
