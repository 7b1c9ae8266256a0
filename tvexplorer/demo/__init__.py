"""The shipped demo: a tiny CLIP pretrained on the demo world's caption corpus (data/world), and the
recipe that builds assets/demo from it."""
