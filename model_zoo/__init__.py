"""The model zoo: text-to-x generators (Stable Diffusion, text-to-video, AudioLDM, ...) behind one protocol.

It sits at the top level of the project, beside ``modaverse/``, as the design card lays it out, and
installs with it. The pipeline reaches it only through :class:`~model_zoo.zoo.Zoo` and the
:class:`~model_zoo.base.Generator` protocol; other packages add generators through the
``modaverse.model_zoo`` entry-point group (:mod:`model_zoo.registry`).
"""
