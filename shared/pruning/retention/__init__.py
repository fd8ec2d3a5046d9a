"""Image retention: prune registry repositories by rules without ever breaking a live image.

``rules`` holds the ``images:`` configuration, ``graph`` the manifests of one repository and what
references what, ``planner`` the pure decision (graph in, plan out), ``oci_backend`` and
``acr_backend`` read graphs from and delete in a registry, and ``prune`` runs the whole pass.
"""
