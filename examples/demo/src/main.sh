#!/bin/sh
echo "hello from the lamina demo: $(ls /app/deps | wc -l) dependencies installed"
