"""The com.example::MyGelu operator for torsh-gen.

- ``spec``: the op's schema, type/shape rule and registration with torsh-gen (entry
  point ``torsh_gen.ops``); the only module that imports torsh-gen.
- ``reference``: the numpy reference kernel, torsh-gen's interpreter and test oracle.
- ``kernels``: the numba kernel that compiled artifacts import and call.

Importing this package imports neither torsh-gen nor numba.
"""

OP_TYPE = "MyGelu"
DOMAIN = "com.example"
