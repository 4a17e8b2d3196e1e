#!/bin/sh
# Containers have no init system: package scripts must never try to start services.
exit 101
