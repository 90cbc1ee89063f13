"""What the tests and the benchmarks share: the OpenStack API double (``testkit.osdouble``), the hub tier's
JupyterHub driver (``testkit.hub``), the image tier's QEMU helpers (``testkit.vm``), the end-to-end tier's
dev-cloud helpers (``testkit.e2e``) and the one polling helper (``testkit.wait.wait_until``)."""
