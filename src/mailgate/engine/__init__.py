"""The restriction engine: stage lists of Postfix restrictions, evaluated to one Action."""
