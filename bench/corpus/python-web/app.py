"""A small Flask service: a health check and a greeting."""

from flask import Flask, jsonify
from greetings import greeting

app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")


@app.get("/hello/<name>")
def hello(name: str):
    return jsonify(message=greeting(name))


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=8000)
