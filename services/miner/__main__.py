from services.miner.app import main

main()
