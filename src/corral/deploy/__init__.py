"""Deployment files and client configs generated from a Corral config.

One module per target (`k8s`, `compose`, `systemd`, `launchd`, `clients`); each builds
plain data from a `DeploySource` (`source.load_source`) and never pastes strings, so
the output always parses and its ports, paths and env names match the config.
"""
