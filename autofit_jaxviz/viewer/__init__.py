"""The live page: every fit under a folder, its newest picture pushed to the browser.

``python -m autofit_jaxviz view [FOLDER]`` (:mod:`.cli`) serves it; the fits
are the history folders that :mod:`autofit_jaxviz.history` writes. Needs the
``viewer`` extra (tornado, watchfiles, pillow).
"""
