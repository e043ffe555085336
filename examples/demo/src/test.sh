#!/bin/sh
set -e
test -f /app/deps/alpha/module.txt
sh /app/src/main.sh
