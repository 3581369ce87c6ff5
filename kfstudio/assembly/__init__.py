"""The brick graph (networkx + psygnal, no Qt): rules, reversible edits and the build into a torch module."""
