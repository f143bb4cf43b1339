"""Text-to-x generator plug-ins (Stable Diffusion, text-to-video, AudioLDM, ...).

Filled by the model-zoo work: a ``Generator`` protocol, a registry, and discovery of
third-party plug-ins through the ``modaverse.model_zoo`` entry-point group.
"""
