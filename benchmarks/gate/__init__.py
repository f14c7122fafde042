"""The speed gate: did this change make it slower? ``cli`` compares, ``child`` times one side,
``evidence`` measures how well the gate tells a slowdown from noise on this machine."""
