# The chaos runner (chaos/README.md, "Runner"): geoscale-chaos starts a real
# 3-node cell, injects faults while client threads run, and checks the
# history with gs_chaos_check. Included by chaos/CMakeLists.txt.

add_executable(geoscale-chaos runner.c runner_net.c)
target_link_libraries(geoscale-chaos PRIVATE gs_chaos_check gs_client_static Threads::Threads)
# The runner starts the node binary it was built with.
add_dependencies(geoscale-chaos geoscaled)

# A seeded run, about 100 s in all (setup, 75 s of faults, whole-cell
# restart, convergence, final reads, check). Seed 20 because its first 75 s
# hold every fault kind (`geoscale-chaos --seed 20 --duration 75
# --schedule-only`). Needs root for network namespaces; without them it runs
# on loopback with pauses instead of partitions.
add_test(NAME chaos_short
         COMMAND geoscale-chaos --seed 20 --duration 75 --clients 8 --keys 8
                 --geoscaled $<TARGET_FILE:geoscaled>
                 --out ${CMAKE_CURRENT_BINARY_DIR}/chaos_short)
set_tests_properties(chaos_short PROPERTIES LABELS chaos TIMEOUT 400 RUN_SERIAL TRUE)

# The checker must catch stale reads: nodes serve linearizable reads
# locally (geoscaled --unsafe-local-reads) and one follower is cut off from
# its peers while pinned clients read through it. Passes only if a
# linearizability violation is found. Needs network namespaces (root).
add_test(NAME chaos_catches_stale_reads
         COMMAND geoscale-chaos --seed 7 --duration 30 --clients 8 --keys 4
                 --unsafe-local-reads --scenario stale-reads --netns on
                 --geoscaled $<TARGET_FILE:geoscaled>
                 --out ${CMAKE_CURRENT_BINARY_DIR}/chaos_catches_stale_reads)
set_tests_properties(chaos_catches_stale_reads PROPERTIES LABELS chaos TIMEOUT 400
                     RUN_SERIAL TRUE)
