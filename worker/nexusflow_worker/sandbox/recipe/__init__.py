"""The sandbox image recipe: ``recipe.json`` and ``entry.py``, the program the container runs.

``entry.py`` is copied into the image and also run by the ``process`` and ``none`` isolation
policies, so every policy shares one contract for code authors.
"""
