// A small Express service: a health check and a list of notes kept in memory.
const express = require("express");

const app = express();
const notes = [];
app.use(express.json());
app.get("/healthz", (req, res) => res.json({ status: "ok", user: process.getuid() }));
app.get("/notes", (req, res) => res.json({ notes }));
app.post("/notes", (req, res) => {
  notes.push(req.body);
  res.status(201).json({ notes });
});

const port = process.env.PORT || 3000;
app.listen(port, () => console.log(`listening on ${port}`));
