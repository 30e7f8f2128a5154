"""Dataset readers. `affwild2` reads the Aff-Wild2 layout, which the generated demo corpus also uses."""
